/*
 * mime_date — see mime_date.h. The value is cut into tokens (numbers,
 * times "hh:mm[:ss]", numeric zones, words), comments and punctuation
 * skipped; then day, month, year, time and zone are taken from the tokens
 * in whatever order they come, which covers RFC 5322 and asctime alike.
 *
 * SECURITY: bounded scan; numbers are capped before they can overflow.
 */
#include "mime/mime_date.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"

enum tok_kind { T_NUM, T_TIME, T_ZONE, T_WORD };

struct tok {
	enum tok_kind kind;
	int value;   /* T_NUM value; T_ZONE offset in minutes */
	int digits;  /* T_NUM digit count */
	int h, m, s; /* T_TIME */
	const char *word;
	size_t wlen;
};

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int
is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Read up to max digits at s[*i]; returns the value or -1. */
static int
read_num(const char *s, size_t len, size_t *i, int max, int *digits)
{
	int v = 0, n = 0;

	while (*i < len && is_digit(s[*i])) {
		if (n < max)
			v = v * 10 + (s[*i] - '0');
		n++;
		(*i)++;
	}
	if (digits != NULL)
		*digits = n;
	return n == 0 ? -1 : v;
}

/* The next token at s[*i]; 0 at the end. */
static int
next_tok(const char *s, size_t len, size_t *i, int have_time, struct tok *t)
{
	while (*i < len) {
		char c = s[*i];
		if (c == '(') {
			int depth = 0;
			for (; *i < len; (*i)++) {
				if (s[*i] == '\\' && *i + 1 < len)
					(*i)++;
				else if (s[*i] == '(')
					depth++;
				else if (s[*i] == ')' && --depth == 0)
					break;
			}
			if (*i < len)
				(*i)++;
			continue;
		}
		if (is_digit(c)) {
			int d;
			int v = read_num(s, len, i, 9, &d);
			if (*i + 1 < len && s[*i] == ':' && is_digit(s[*i + 1])) {
				t->kind = T_TIME;
				t->h = d <= 2 ? v : -1;
				(*i)++;
				t->m = read_num(s, len, i, 3, &d);
				if (d > 2)
					t->m = -1;
				t->s = 0;
				if (*i + 1 < len && s[*i] == ':' && is_digit(s[*i + 1])) {
					(*i)++;
					t->s = read_num(s, len, i, 3, &d);
					if (d > 2)
						t->s = -1;
				}
				return 1;
			}
			t->kind = T_NUM;
			t->value = v;
			t->digits = d;
			return 1;
		}
		if ((c == '+' || c == '-') && have_time && *i + 1 < len && is_digit(s[*i + 1])) {
			/* numeric zone: exactly four digits, minutes below 60 */
			size_t j = *i + 1;
			int d, v = read_num(s, len, &j, 9, &d);
			if (d == 4 && v % 100 < 60) {
				int mins = (v / 100) * 60 + v % 100;
				t->kind = T_ZONE;
				t->value = c == '-' ? -mins : mins;
				*i = j;
				return 1;
			}
		}
		if (is_alpha(c)) {
			t->kind = T_WORD;
			t->word = s + *i;
			while (*i < len && is_alpha(s[*i]))
				(*i)++;
			t->wlen = (size_t)(s + *i - t->word);
			return 1;
		}
		(*i)++; /* ',', '.', '/', white space, other junk */
	}
	return 0;
}

static int
word_is(const struct tok *t, const char *w)
{
	return t->wlen == strlen(w) && strncasecmp(t->word, w, t->wlen) == 0;
}

static int
month_of(const struct tok *t)
{
	static const char *const mon[] = {"jan", "feb", "mar", "apr", "may", "jun",
					  "jul", "aug", "sep", "oct", "nov", "dec"};

	if (t->wlen < 3)
		return -1;
	for (int i = 0; i < 12; i++) {
		if (strncasecmp(t->word, mon[i], 3) == 0)
			return i + 1;
	}
	return -1;
}

/* Zone names of RFC 5322 §4.3; military letters are read as -0000. */
static int
zone_of(const struct tok *t, int *mins)
{
	static const struct {
		const char *name;
		int hours;
	} zones[] = {{"UT", 0},	  {"UTC", 0},  {"GMT", 0},  {"Z", 0},	 {"EST", -5}, {"EDT", -4},
		     {"CST", -6}, {"CDT", -5}, {"MST", -7}, {"MDT", -6}, {"PST", -8}, {"PDT", -7}};

	for (size_t i = 0; i < ARRAY_LEN(zones); i++) {
		if (word_is(t, zones[i].name)) {
			*mins = zones[i].hours * 60;
			return 1;
		}
	}
	if (t->wlen == 1) {
		*mins = 0;
		return 1;
	}
	return 0;
}

static int
days_in_month(int y, int m)
{
	static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : d[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int
mime_date_parse(const char *s, size_t len, time_t *t_r, int *tz_r)
{
	int day = -1, mon = -1, year = -1, ydigits = 0, h = 0, mi = 0, sec = 0, tz = 0;
	int have_time = 0, have_zone = 0;
	size_t i = 0;
	struct tok t;

	while (next_tok(s, len, &i, have_time, &t)) {
		switch (t.kind) {
		case T_TIME:
			if (!have_time) {
				if (t.h < 0 || t.h > 23 || t.m < 0 || t.m > 59 || t.s < 0 ||
				    t.s > 60)
					return -1;
				h = t.h;
				mi = t.m;
				sec = t.s == 60 ? 59 : t.s; /* a leap second */
				have_time = 1;
			}
			break;
		case T_ZONE:
			if (!have_zone) {
				tz = t.value;
				have_zone = 1;
			}
			break;
		case T_NUM:
			if (day < 0 && t.digits <= 2 && t.value >= 1 && t.value <= 31) {
				day = t.value;
			} else if (year < 0) {
				year = t.value;
				ydigits = t.digits;
			}
			break;
		case T_WORD: {
			int m = month_of(&t), z;
			if (m > 0 && mon < 0 && t.wlen <= 9)
				mon = m;
			else if (have_time && !have_zone && zone_of(&t, &z)) {
				tz = z;
				have_zone = 1;
			}
			break;
		}
		}
	}
	if (day < 0 || mon < 0 || year < 0 || ydigits > 4)
		return -1;
	if (ydigits <= 2)
		year += year < 50 ? 2000 : 1900; /* RFC 5322 §4.3 */
	else if (ydigits == 3)
		year += 1900;
	if (year < 1000 || day > days_in_month(year, mon))
		return -1;
	int64_t secs = days_from_civil(year, mon, day) * 86400 + (int64_t)h * 3600 +
		       (int64_t)mi * 60 + sec - (int64_t)tz * 60;
	if (sizeof(time_t) < 8 && (secs > INT32_MAX || secs < INT32_MIN))
		return -1;
	*t_r = (time_t)secs;
	*tz_r = tz;
	return 0;
}
