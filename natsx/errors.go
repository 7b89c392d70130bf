package natsx

import "errors"

// ErrNotReady is returned when the embedded server does not accept connections in time.
var ErrNotReady = errors.New("embedded nats-server not ready")

// ErrIncompatible is returned when an existing stream or bucket has a setting that cannot be changed in
// place; the message names the stream and the setting.
var ErrIncompatible = errors.New("incompatible existing configuration")

// ErrServerTooOld is returned when the NATS server lacks a feature the bridge needs; the message names its
// version and [OldestServer].
var ErrServerTooOld = errors.New("nats-server too old")
