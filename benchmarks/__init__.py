"""Speed benchmarks of lasagne-caption: scripts, not part of the installed package.

Run them from anywhere (each puts the repository root on ``sys.path``)::

    python benchmarks/bench.py [--threads 1] [--generation] [--encoding] ...
        # the train step against a PyTorch peer (needs the ``bench`` extra),
        # optionally caption generation and image encoding speed
    python benchmarks/generation_speed.py --checkpoint wrote_net.params
        # one step per word vs re-running the prefix, on a trained checkpoint
    python benchmarks/encode_throughput.py -n 200 [--ref-python VENV/bin/python]
        # the MobileNetV2 encoder against PyTorch float32 and the int8 runtime
    python benchmarks/grid_agreement.py -n 100
        # the 7x7 grid against the int8 runtime's own Conv_1 tensor

Modules: :mod:`.bench` (the driver, the train-step workers, the table),
:mod:`.torch_peer` (the seminar network in PyTorch), :mod:`.torch_mobilenet_v2`
(MobileNetV2 in PyTorch with the toolkit's weights), :mod:`.generation_speed`
(:func:`~benchmarks.generation_speed.time_step_generation`, the greedy / beam-3
timing that ``bench.py --generation`` also uses) and :mod:`.encode_throughput`
(:func:`~benchmarks.encode_throughput.time_encoding`, the encoder timing that
``bench.py --encoding`` also uses). Importable from the repository root
(``from benchmarks import bench, torch_peer``) for the tests; nothing under
``lasagne_caption/`` imports from here.
"""
