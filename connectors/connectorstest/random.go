package connectorstest

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// SeedsEnv names the variable that sets how many seeds each randomised
// test runs (its own default otherwise), to search longer by hand.
const SeedsEnv = "OPTOUT_TEST_SEEDS"

// Randomised runs test once per seed, each a subtest named by its seed
// with its own generator (PCG of the seed and stream), so that a failure
// names the seed that replays it.
func Randomised(t *testing.T, seeds int, stream uint64, test func(t *testing.T, rng *rand.Rand)) {
	t.Helper()
	if s := os.Getenv(SeedsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of seeds", SeedsEnv, s)
		}
		seeds = n
	}
	for seed := range uint64(seeds) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) { test(t, rand.New(rand.NewPCG(seed, stream))) })
	}
}
