"""Data: clip samplers, video transforms, labelled datasets and the MotionShapes generator."""
