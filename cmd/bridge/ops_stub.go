package main

import (
	"context"
	"errors"
	"io"
)

// Placeholders replaced by the operations commands (issue 6).

func runReplay(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	return usageError{errors.New("bridge replay: not built yet")}
}

func runDeadletter(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	return usageError{errors.New("bridge deadletter: not built yet")}
}

func runStatus(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	return usageError{errors.New("bridge status: not built yet")}
}

func runSubmitClient(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	return usageError{errors.New("bridge submit: not built yet")}
}

func runJobClient(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	return usageError{errors.New("bridge job: not built yet")}
}
