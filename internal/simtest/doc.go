// Package simtest starts the upstream simulator for tests and hands out clients of it: real HTTP on a
// loopback port, cleaned up with the test. It also offers a webhook receiver and WaitFor.
package simtest
