package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/bridge"
	"github.com/evershield/bridge/jobs"
)

// envTestFailpoint is read by bridge run only, for the crash suite (test/crash), and is not part of the
// configuration: "<point>:<file>", point before-publish or after-publish (a result's publish path), or
// compact-after-history or compact-after-remove (a compaction round); see [jobs.Failpoints]. The first
// time the process reaches the point it writes the job's id to file, logs "test failpoint
// reached", and blocks until the file is removed: the test then stops it there (SIGSTOP) for as long as
// it likes, removes the file and continues it (SIGCONT), or kills it there (SIGKILL). Never set it in a
// deployment: a process that reaches the point waits for ever.
const envTestFailpoint = "BRIDGE_TEST_FAILPOINT"

// testFailpoint returns the option that installs BRIDGE_TEST_FAILPOINT, or none when it is unset.
func testFailpoint(env map[string]string, log zerolog.Logger) ([]bridge.Option, error) {
	v := env[envTestFailpoint]
	if v == "" {
		return nil, nil
	}
	point, file, ok := strings.Cut(v, ":")
	if !ok || file == "" || !slices.Contains(jobs.Failpoints(), jobs.Failpoint(point)) {
		names := make([]string, 0, len(jobs.Failpoints()))
		for _, p := range jobs.Failpoints() {
			names = append(names, string(p))
		}
		return nil, fmt.Errorf("%s: want <point>:<file>, the point one of %s; got %q", envTestFailpoint, strings.Join(names, ", "), v)
	}
	log.Warn().Str("failpoint", point).Str("file", file).Msg("test failpoint armed: this process will block at it once")
	var fired atomic.Bool
	return []bridge.Option{bridge.WithDeliveryFailpoint(func(p jobs.Failpoint, id string) {
		if string(p) != point || !fired.CompareAndSwap(false, true) {
			return
		}
		if err := os.WriteFile(file, []byte(id), 0o644); err != nil {
			log.Error().Err(err).Msg("test failpoint: write file; not blocking")
			return
		}
		log.Warn().Str("failpoint", point).Str("job_id", id).Msg("test failpoint reached; blocking until its file is removed")
		for {
			if _, err := os.Stat(file); os.IsNotExist(err) {
				break
			}
			time.Sleep(10 * time.Millisecond) // polling the file the test removes to release the process
		}
		log.Warn().Str("failpoint", point).Str("job_id", id).Msg("test failpoint released")
	})}, nil
}
