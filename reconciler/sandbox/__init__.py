"""Real parts for the tests, the benchmarks and `reconciler demo`.

The reconciler upgrades fleets it reaches over SSH with npm; testing it against mocks would
test the mocks. This subpackage runs the real things instead, all on loopback: a local npm
registry (verdaccio) holding a catalog of releases, and a faithful stand-in `openclaw` (a small
dependency-free Node package speaking the product's CLI and HTTP shapes, with switchable
faults) that installs and upgrades with plain `npm i -g`, so the real product drops in unchanged.
"""
