"""What a finished (or running) search leaves: its solutions, report, re-evaluation on
held-out data, fine-tuned offspring and exported offspring."""
