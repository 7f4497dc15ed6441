#include "core/log.h"
int main(void) { log_info("hello"); return 0; }
