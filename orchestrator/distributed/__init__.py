"""Ray wiring only: the cluster connection, Ray Train's TorchTrainer around training/loop.py, the
generation pool of actors, log-prob tasks, Ray Tune and Ray Serve. The only folder that imports
Ray; it calls the layers below and holds none of their logic."""
