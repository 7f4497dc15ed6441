/*
 * mime_date — RFC 5322 §3.3 date-time values, with the obsolete forms of
 * §4.3 and the deviations mail clients produce: an optional day name, two-
 * and three-digit years, missing seconds, comments and folding anywhere,
 * named and military zones, a missing zone, and the asctime layout
 * ("Mon Jan  1 00:00:00 2001"). Used for SEARCH SENTBEFORE/SENTON/SENTSINCE
 * and SORT DATE.
 *
 * SECURITY: the value is untrusted; parsing is a single bounded scan with
 * range checks on every field; no locale or TZ environment is consulted.
 */
#ifndef SURAT_MIME_DATE_H
#define SURAT_MIME_DATE_H

#include <stddef.h>
#include <time.h>

/*
 * Parse s[0..len). Returns 0 with *t_r set to the moment (seconds since
 * the epoch, UTC) and *tz_r to the zone offset in minutes east of UTC
 * (0 for -0000, UT, GMT and unknown zones), or -1 when no valid date is
 * found (the caller then uses the arrival time, RFC 5256 §2.2).
 */
int mime_date_parse(const char *s, size_t len, time_t *t_r, int *tz_r);

#endif
