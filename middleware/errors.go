// Package middleware holds the gin middleware of the API: recovery, request
// logging, client identity and rate limiting.
package middleware

import "github.com/gin-gonic/gin"

// Abort ends the request with status and the JSON body {"error": msg},
// plus any extra fields.
func Abort(c *gin.Context, status int, msg string, extra gin.H) {
	body := gin.H{"error": msg}
	for k, v := range extra {
		body[k] = v
	}
	c.AbortWithStatusJSON(status, body)
}
