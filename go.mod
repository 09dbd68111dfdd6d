module github.com/ossmount/ossmount

go 1.26.8

require github.com/aliyun/alibabacloud-oss-go-sdk-v2 v1.6.1

require (
	github.com/dustin/go-humanize v1.1.0 // indirect
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	golang.org/x/sys v0.28.0 // indirect
	golang.org/x/time v0.4.0 // indirect
)
