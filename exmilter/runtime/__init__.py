"""What both daemons share, without a reactor: configuration generations and their reload
(``generation``), systemd notifications (``notify``), the metrics every daemon has and their
exposition (``metrics``). ``metrics_site`` serves the exposition with Twisted web, for the
daemon that runs a reactor.
"""
