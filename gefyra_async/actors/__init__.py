"""Actors: long-lived reconcilers that run under a Supervisor (see core/actor.py)."""
