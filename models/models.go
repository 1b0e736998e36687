// Package models holds the database tables (continents, users), opening and
// migrating the database, seeding it, and the queries the service makes.
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

// User is an API account; only the bcrypt hash of its password is stored.
type User struct {
	ID           uint   `gorm:"primaryKey"`
	Username     string `gorm:"size:64;not null;uniqueIndex"`
	PasswordHash string `gorm:"size:100;not null" json:"-"`
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Credential is a user name and password to seed.
type Credential struct {
	Name     string
	Password string
}

// continents is the reference data Seed writes: ids 1..7 in the tutorial's order.
var continents = []Continent{
	{1, "ASIA"}, {2, "AFRICA"}, {3, "NORTH AMERICA"}, {4, "SOUTH AMERICA"},
	{5, "ANTARCTICA"}, {6, "EUROPE"}, {7, "AUSTRALIA"},
}
