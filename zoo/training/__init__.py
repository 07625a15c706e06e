"""What ``python train.py`` runs (``run.train``), and the callbacks and plugins the configs name:
exact resume, preemption, the finite-loss guard, atomic checkpoint writes, throughput, sweeps."""
