package datastore

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// quietZap is a zap logger for etcd's client and server that keeps only
// errors: etcd logs routine retries and elections at info and warn.
func quietZap() *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	cfg.Sampling = nil
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}
