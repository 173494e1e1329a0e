"""The app's pages: ``views/`` holds one script per page, ``shared/`` the Streamlit glue they share.

No module lives directly in this folder, and none may: Streamlit still treats a ``pages/`` folder
next to the entry script as a legacy multipage app on the first run of a server process (and on
every AppTest run), listing each ``pages/*.py`` in the sidebar under its file name, and running
``pages/<stem>.py`` on its own for a URL ``/<stem>``, until ``app.py``'s ``st.navigation`` takes
over. With only sub-packages here, that legacy router finds no page but ``app.py``: the sidebar
shows the navigation's titles from the first paint, and no URL can run a page without ``app.py``.
``tests/test_browser.py`` checks it on a fresh server.
"""
