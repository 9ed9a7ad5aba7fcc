package lograte

import (
	"fmt"
	"testing"
	"time"
)

func TestAllowOncePerInterval(t *testing.T) {
	l := New(50 * time.Millisecond)
	if ok, n := l.Allow("a"); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for range 3 {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("repeat allowed within the interval")
		}
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key was held back")
	}
	time.Sleep(60 * time.Millisecond)
	if ok, n := l.Allow("a"); !ok || n != 3 {
		t.Fatalf("after the interval: %v, %d suppressed, want 3", ok, n)
	}
}

func TestFirst(t *testing.T) {
	l := New(time.Nanosecond)
	if !l.First("x") || l.First("x") {
		t.Fatal("First must be true once")
	}
}

func TestKeysBounded(t *testing.T) {
	l := New(time.Hour)
	for i := range maxKeys + 10 {
		l.Allow(fmt.Sprint(i))
	}
	if len(l.keys) > maxKeys {
		t.Fatalf("%d keys kept", len(l.keys))
	}
}
