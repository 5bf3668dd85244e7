"""torchenv's smoke suite: pytest checks that need only torch (torchvision and numpy optional).

Run it with ``torchenv check``, which isolates it from the user's pytest configuration, points every
cache at a temporary folder, enforces per-check timeouts and writes the report.
"""
