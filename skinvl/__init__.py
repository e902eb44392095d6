"""SkinVL: generative visual question answering on skin images (work in progress).

What exists so far: question/answer pairs generated from the atlas annotations
(:mod:`skinvl.qa`) and the model (:mod:`skinvl.model`: SkinCLIP image trunk as visual tokens,
linear or MLP projector, a causal language model, MiniLM as a decoder by default). Training
stages, generation, the ``skinvl`` command and evaluation are not built yet.
"""
