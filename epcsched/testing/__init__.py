"""Test doubles that speak real protocols: a fake kube-apiserver for tests and the demo.

Nothing here is imported by the programs epcsched ships; tests and the demo start these servers
on loopback ports and point the real clients at them.
"""
