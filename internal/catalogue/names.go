package catalogue

// ValidListName reports whether s can name a code list: 1 to 64 characters
// of lower-case ASCII letters, digits and '-', such as "vn-admin-units".
func ValidListName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLower(c) && !isDigit(c) && c != '-' {
			return false
		}
	}
	return true
}

// ValidVersion reports whether s can label a version of a code list: 1 to
// 32 characters of ASCII letters, digits, '.', '_' and '-', such as
// "2026-07".
func ValidVersion(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		upper := c >= 'A' && c <= 'Z'
		if !isLower(c) && !upper && !isDigit(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isLower(c byte) bool { return c >= 'a' && c <= 'z' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
