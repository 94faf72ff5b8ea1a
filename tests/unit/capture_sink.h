/* capture_sink.h: a host output sink for tests: blo_config's write_fn and
 * error_fn append to a fixed buffer (cut, never overrun, when it is full)
 * and count their calls. */
#ifndef BLO_CAPTURE_SINK_H
#define BLO_CAPTURE_SINK_H

#include <string.h>

typedef struct { char buf[1 << 16]; size_t n; int calls; } sink;

static inline void sink_write(void *ud, const char *s, size_t n) {
  sink *k = ud;
  k->calls++;
  if (k->n + n >= sizeof k->buf) n = sizeof k->buf - 1 - k->n;
  memcpy(k->buf + k->n, s, n);
  k->n += n;
  k->buf[k->n] = 0;
}

static inline void sink_error(void *ud, const char *s) { sink_write(ud, s, strlen(s)); }

#endif
