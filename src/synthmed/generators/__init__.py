"""Generator families (DDPM, Pix2Pix, DCGAN) behind one contract; see ``base.py``."""
