package routes

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"tollgate/middleware"
	"tollgate/models"
)

// continent is the API shape of a continent, as in the tutorial.
type continent struct {
	ContinentID   int64  `json:"continent_id"`
	ContinentName string `json:"continent_name"`
}

func toContinents(cs []models.Continent) []continent {
	out := make([]continent, len(cs))
	for i, c := range cs {
		out[i] = continent{ContinentID: c.ContinentID, ContinentName: c.ContinentName}
	}
	return out
}

// listContinents serves the continents loaded at start-up: reference data
// that only changes with a new release (Seed), so no query per request, and
// the body is encoded once. It answers what c.Data would, with the header
// values made once too (c.Data makes them, and a renderer, per request).
func listContinents(cs []models.Continent) gin.HandlerFunc {
	body, err := json.Marshal(toContinents(cs))
	// Shared by every response; never changed, only read.
	contentType := []string{"application/json; charset=utf-8"}
	contentLength := []string{strconv.Itoa(len(body))}
	return func(c *gin.Context) {
		if err != nil { // plain structs always encode; kept for honesty
			middleware.Fail(c, nil, fmt.Errorf("encode continents: %w", err))
			return
		}
		h := c.Writer.Header()
		h["Content-Type"] = contentType
		h["Content-Length"] = contentLength
		c.Status(http.StatusOK)
		if _, err := c.Writer.Write(body); err != nil {
			_ = c.Error(err) // as c.Data: the client is gone
			c.Abort()
		}
	}
}

var (
	errContinentNotFound = fmt.Errorf("continent %w", middleware.ErrNotFound)
	errContinentID       = fmt.Errorf("%w: continent id must be an integer", middleware.ErrBadRequest)
)

func getContinent(cs []models.Continent) gin.HandlerFunc {
	byID := make(map[int64]continent, len(cs))
	for _, ct := range toContinents(cs) {
		byID[ct.ContinentID] = ct
	}
	return func(c *gin.Context) {
		id, err := strconv.ParseInt(c.Param("id"), 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			// An integer, only too large for any continent.
			middleware.Fail(c, nil, errContinentNotFound)
			return
		}
		if err != nil {
			middleware.Fail(c, nil, errContinentID)
			return
		}
		ct, ok := byID[id]
		if !ok {
			middleware.Fail(c, nil, errContinentNotFound)
			return
		}
		c.JSON(http.StatusOK, ct)
	}
}
