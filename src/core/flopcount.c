#include "flopcount.h"

uint64_t fh_macs = 0;
