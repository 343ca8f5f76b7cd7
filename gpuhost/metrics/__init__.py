"""gpuhost check as Prometheus metrics: the families of one report (report.py) and the textfile
node_exporter reads, written atomically with the run's own outcome beside it (textfile.py)."""
