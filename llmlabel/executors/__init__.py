"""Executors: where a label recipe runs. `local` labels in this process; `ray` spreads the rows over actor pools on a
Ray cluster (one engine per GPU or worker). A new executor is one file here plus one line in
`llmlabel.registry.executors`."""
