"""simplesafe.synth"""
