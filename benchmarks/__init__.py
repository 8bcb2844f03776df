"""Speed benchmarks of lasagne-caption: scripts, not part of the installed package.

Run them from anywhere (each puts the repository root on ``sys.path``)::

    python benchmarks/bench.py [--threads 1] [--generation] [--encoding] ...
        # the train step against a PyTorch peer (needs the ``bench`` extra),
        # optionally caption generation and image encoding speed
    python benchmarks/generation_speed.py --checkpoint wrote_net.params
        # one step per word vs re-running the prefix, on a trained checkpoint
    python benchmarks/encode_throughput.py -n 200
        # the MobileNetV2 encoder against the reference TFLite runtime

Modules: :mod:`.bench` (the driver, the train-step workers, the table),
:mod:`.torch_peer` (the seminar network in PyTorch), :mod:`.generation_speed`
(:func:`~benchmarks.generation_speed.time_step_generation`, the greedy / beam-3
timing that ``bench.py --generation`` also uses) and :mod:`.encode_throughput`
(:func:`~benchmarks.encode_throughput.time_encoding`, the encoder timing that
``bench.py --encoding`` also uses). Importable from the repository root
(``from benchmarks import bench, torch_peer``) for the tests; nothing under
``lasagne_caption/`` imports from here.
"""
