"""SkinVL: generative visual question answering on skin images.

Question/answer pairs come from the atlas annotations or MM-Skin's files (:mod:`skinvl.qa`,
:mod:`skinvl.data`); the model (:mod:`skinvl.model`) feeds the SkinCLIP image tower's
embedding and feature map through a projector into a causal language model (MiniLM as a
decoder by default); :mod:`skinvl.module` trains it in two stages; :mod:`skinvl.evaluate`
scores it against a blank image and SkinCLIP zero-shot; :mod:`skinvl.cli` is ``skinvl``.
"""
