// Package dvhc implements the Ministry of Home Affairs' administrative-units
// service, vn.gov.dvhc.v1.AdminUnitService, over the unit lists embedded in
// package dataset.
//
// Two editions are served: "2026-07", the current two-level structure
// (province and commune), which is the default, and "2025-03", the
// three-level structure (province, district, commune) in force until the
// reorganisation of 2025-07-01. The mapping published for that
// reorganisation links each former commune to the commune or communes it
// became part of.
//
// [Load] parses the embedded data once; [NewServer] serves it over gRPC.
// [DescriptorSet] returns the service's descriptors for registration in the
// registry.
package dvhc
