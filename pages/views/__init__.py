"""One script per page, run by ``app.py``'s ``st.navigation`` (listed in ``pages.shared.registry``):
widgets -> one ``core`` call (cached in ``pages.shared``) -> a ``core.charts`` figure or a table."""
