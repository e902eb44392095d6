"""The SkinCLIP case explorer, a Streamlit page (``skinclip app``)."""
