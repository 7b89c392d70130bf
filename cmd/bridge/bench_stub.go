package main

import (
	"context"
	"errors"
	"io"
)

// Placeholder replaced by the load tool (issue 7).
func runBench(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	return usageError{errors.New("bridge bench: not built yet")}
}
