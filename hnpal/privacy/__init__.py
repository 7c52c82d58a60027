"""What users control about their data: deletion with a grace period, restore, purge, export, audit."""
