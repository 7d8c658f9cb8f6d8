"""Test helpers for the Crun provider: an offline, loopback emulator of the Crun API."""
