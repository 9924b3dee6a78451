"""ATNA audit (IHE ITI-20): audit records, their DICOM and FHIR forms, their delivery over
syslog and their storage. See docs/audit.md."""
