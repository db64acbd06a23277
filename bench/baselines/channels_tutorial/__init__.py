"""Baseline (b): the Django Channels tutorial's chat design, run by one daphne.

``AsyncWebsocketConsumer`` + ``group_send`` over channels-redis: each room is a
channel-layer group, each message one ``group_send``. Written for this harness
after the tutorial's design; it uses nothing of the project.
"""
