"""Rewrites a .blo script so that every plot(...) call also checks the figure
it drew (tests/run_figures.sh): each call becomes
    __fig(plot(ARGS, info = true), ARGS' first argument)
and a prelude defines __fig, which asserts, from plot's info record, that an
axes figure has tick labels on both axes, inside the axis ranges, and no point
outside the axes; an image grid, a colour bar with tick labels."""
import sys

PRELUDE = '''fn __fig(r, path) {
  if len(r.crange) > 0 {
    assert(len(r.cticks) >= 2, path + ": the colour bar has fewer than two tick labels")
    return 0
  }
  assert(len(r.xticks) >= 2, path + ": the x axis has fewer than two tick labels")
  assert(len(r.yticks) >= 2, path + ": the y axis has fewer than two tick labels")
  assert(all(r.xticks >= r.xlim[0]) && all(r.xticks <= r.xlim[1]), path + ": an x tick lies outside the axis")
  assert(all(r.yticks >= r.ylim[0]) && all(r.yticks <= r.ylim[1]), path + ": a y tick lies outside the axis")
  assert(r.hidden == 0, path + format(": %d points lie outside the axes", r.hidden))
  return 0
}
'''


def rewrite(src):
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if c == '"':                      # copy a string literal
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == '\\' else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif c == '#':                    # copy a comment
            j = src.find('\n', i)
            j = n if j < 0 else j
            out.append(src[i:j])
            i = j
        elif src.startswith('plot(', i) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == '_')):
            j, depth, k = i + 5, 1, i + 5
            first_end = None
            while j < n and depth:
                ch = src[j]
                if ch == '"':
                    j += 1
                    while j < n and src[j] != '"':
                        j += 2 if src[j] == '\\' else 1
                elif ch in '([{':
                    depth += 1
                elif ch in ')]}':
                    depth -= 1
                elif ch == ',' and depth == 1 and first_end is None:
                    first_end = j
                j += 1
            args = src[i + 5:j - 1]
            path = src[k:first_end] if first_end else args
            out.append('__fig(plot(%s, info = true), %s)' % (rewrite(args), path.strip()))
            i = j
        else:
            out.append(c)
            i += 1
    return ''.join(out)


if __name__ == '__main__':
    with open(sys.argv[1]) as f:
        src = f.read()
    # a leading comment stays first; the prelude goes before the first statement
    sys.stdout.write(PRELUDE + rewrite(src))
