"""Streamlit glue shared by the pages, one module per job:

``registry``  the pages of the app (titles, icons, addresses)
``cached``    the store and every cached getter (keyed on the data version or the model's card stamp)
``session``   the current dataset and model (sidebar pickers, URL), demo mode
``feedback``  error boxes, queued messages, progress bars
``actions``   what changes data or models: first-start data, ingest and preview, deletes, model uploads
``display``   formatters, chart and table helpers

Nothing here holds one user's state in a shared cache; no analytics live here (they are in ``core``).
"""
