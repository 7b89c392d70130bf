package ingest

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// DefaultHighWater is the share of a stream's byte or message limit from which [Pressure] reports it
// high.
const DefaultHighWater = 0.9

// PressureConfig configures a [Pressure]. Info or Level is required.
type PressureConfig struct {
	// Info reads the watched stream's state and limits (WEBHOOKS).
	Info func(context.Context) (*jetstream.StreamInfo, error)
	// Level, instead of Info, reads any other fill level: how much is used of a limit (e.g. the slow
	// lane's backlog of webhooks without provenance against BRIDGE_UNKNOWN_BACKLOG).
	Level func(context.Context) (used, limit float64, err error)
	// What names what is watched, for the log; default "webhook backlog".
	What string
	// HighWater is the share of MaxBytes or MaxMsgs from which the stream counts as near its limit;
	// default DefaultHighWater.
	HighWater float64
	// Every is the period of the reads; default 1s.
	Every time.Duration
	// Log receives changes of state, tagged component=ingest.
	Log zerolog.Logger
}

// Pressure watches how full a stream is, for ingest's backpressure ([Config].Overloaded). A stream
// without a byte or message limit is never high. It is safe for concurrent use.
type Pressure struct {
	cfg  PressureConfig
	high atomic.Bool
}

// NewPressure returns a Pressure for cfg; Run starts the reads.
func NewPressure(cfg PressureConfig) (*Pressure, error) {
	if cfg.Info == nil && cfg.Level == nil {
		return nil, errors.New("ingest: pressure: Info or Level: required")
	}
	if cfg.What == "" {
		cfg.What = "webhook backlog"
	}
	if cfg.HighWater <= 0 || cfg.HighWater > 1 {
		cfg.HighWater = DefaultHighWater
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	cfg.Log = cfg.Log.With().Str("component", "ingest").Logger()
	return &Pressure{cfg: cfg}, nil
}

// High reports whether the stream was near its limit at the last read.
func (p *Pressure) High() bool { return p.high.Load() }

// Check reads the stream once and updates High.
func (p *Pressure) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if p.cfg.Level != nil {
		used, limit, err := p.cfg.Level(ctx)
		if err != nil {
			return err
		}
		p.set(over(used, limit, p.cfg.HighWater), func(e *zerolog.Event) { e.Float64("used", used).Float64("limit", limit) })
		return nil
	}
	info, err := p.cfg.Info(ctx)
	if err != nil {
		return err
	}
	high := over(float64(info.State.Bytes), float64(info.Config.MaxBytes), p.cfg.HighWater) ||
		over(float64(info.State.Msgs), float64(info.Config.MaxMsgs), p.cfg.HighWater)
	p.set(high, func(e *zerolog.Event) {
		e.Uint64("bytes", info.State.Bytes).Int64("max_bytes", info.Config.MaxBytes).
			Uint64("msgs", info.State.Msgs).Int64("max_msgs", info.Config.MaxMsgs)
	})
	return nil
}

// set records the state and logs a change with the figures add puts in.
func (p *Pressure) set(high bool, add func(*zerolog.Event)) {
	if p.high.Swap(high) != high {
		e := p.cfg.Log.Warn().Bool("high", high).Str("what", p.cfg.What)
		add(e)
		e.Msg("pressure changed")
	}
}

func over(used, limit, share float64) bool { return limit > 0 && used >= share*limit }

// Run reads the stream every period until ctx ends; a failed read keeps the last state. It returns nil.
func (p *Pressure) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Every)
	defer t.Stop()
	for {
		if err := p.Check(ctx); err != nil && ctx.Err() == nil {
			p.cfg.Log.Debug().Err(err).Msg("read webhook stream state")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
