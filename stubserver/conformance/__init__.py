"""``stubserver conformance``: a federation conformance verdict on a running homeserver.

- ``runner``   test records, results, ``--only`` selection, the threaded run, exit status
- ``output``   ``--json``, the table for people, JUnit XML
- ``context``  what each test gets: the attached peer, the homeserver's users, waits
- ``forged``   requests signed wrongly (or not at all), sent raw to the homeserver
- ``suite``    the built-in suite: ``suite_keys``, ``suite_rooms``, ``suite_pdus``,
  ``suite_edus`` (each test names its Server-Server API v1.19 section)
"""
