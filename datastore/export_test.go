package datastore

// SetListPageSize sets the relist page size for a test and returns the
// function that puts it back.
func SetListPageSize(n int64) (restore func()) {
	old := listPageSize
	listPageSize = n
	return func() { listPageSize = old }
}

// OnListPage calls fn with the number of keys of each relist page.
func OnListPage(fn func(keys int)) (restore func()) {
	testHookListPage = fn
	return func() { testHookListPage = nil }
}
