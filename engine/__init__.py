"""cleanaudit engine: BPMN processes of the Xinjiang Cleaner Production Audit Measures on SpiffWorkflow."""
