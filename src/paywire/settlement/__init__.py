"""paywire.settlement: the rail-agnostic exactly-once settlement engine and the ``Rail`` it drives.

Its own package (not inside ``paywire.facilitator``) so that chain families (``paywire.chain.rail``) and
schemes (``paywire.schemes.*.facilitator``) can depend on it while the facilitator service depends on them.
"""
