// Package models holds the database tables (continents, users, API keys),
// opening and migrating the database, seeding it, and the queries the service
// makes.
//
// Constructors follow the module's one style: what the value cannot work
// without as parameters, its settings in one options struct named after the
// type (NewStore takes StoreOptions), each field saying what its zero value
// means.
package models

import "time"

// Continent is one row of the continents table, laid out as in the tutorial
// this service grew from.
type Continent struct {
	ContinentID   int64  `gorm:"column:continent_id;primaryKey"`
	ContinentName string `gorm:"column:continent_name;size:100;not null"`
}

// TableName keeps the tutorial's table name.
func (Continent) TableName() string { return "continents" }

// DefaultTier is the tier of a user nobody gave one.
const DefaultTier = "free"

// User is an API account; only the bcrypt hash of its password is stored.
// Tier picks the user's rate limits (see the policy file).
type User struct {
	ID           uint   `gorm:"primaryKey"`
	Username     string `gorm:"size:64;not null;uniqueIndex"`
	PasswordHash string `gorm:"size:100;not null" json:"-"`
	Tier         string `gorm:"size:32;not null;default:'free'"`
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// APIKey is a key a user sends in X-API-Key instead of a password. Only the
// SHA-256 of the key is stored (a key is 32 random bytes, so a fast hash is
// enough); Prefix, its first characters, tells keys apart in listings and is
// no secret. A key with RevokedAt set no longer identifies anyone.
type APIKey struct {
	ID        uint   `gorm:"primaryKey"`
	UserID    uint   `gorm:"not null;index"`
	Hash      string `gorm:"size:64;not null;uniqueIndex"`
	Prefix    string `gorm:"size:16;not null"`
	CreatedAt time.Time
	RevokedAt *time.Time
}

// TableName names the table api_keys.
func (APIKey) TableName() string { return "api_keys" }

// Account is a user name and password to seed. An empty Tier leaves an
// existing user's tier as it is and gives a new user DefaultTier.
type Account struct {
	Name     string
	Password string
	Tier     string
}

// continents is the reference data Seed writes: ids 1..7 in the tutorial's order.
var continents = []Continent{
	{1, "ASIA"}, {2, "AFRICA"}, {3, "NORTH AMERICA"}, {4, "SOUTH AMERICA"},
	{5, "ANTARCTICA"}, {6, "EUROPE"}, {7, "AUSTRALIA"},
}
