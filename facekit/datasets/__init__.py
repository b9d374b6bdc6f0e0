"""facekit.datasets"""
