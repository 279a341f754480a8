/* grad_fixtures.c - the fixture comparison against the fp64 build (see test_fixtures.c). */
#include "test_fixtures.c"
