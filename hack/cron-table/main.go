// Command cron-table prints, as JSON, what github.com/robfig/cron/v3 (the version
// kube-controller-manager v1.36.3 vendors) does with a set of CronJob schedules: how
// ParseStandard parses or rejects them, and the chain of SpecSchedule.Next times from
// many start instants in many time zones, densely around every DST transition.
//
// The Python port in operator/nightshift/core/cron.py is checked against this table by
// tests/unit/test_cron_robfig.py; the table is the proof that the operator computes the
// same scheduled times as the CronJob controller.
//
// Regenerate (from the repository root; builds with the Go module proxy into caches
// outside the repository):
//
//	cd hack/cron-table && GOFLAGS=-mod=mod GOCACHE=$HOME/.cache/nightshift/go-build \
//	  GOMODCACHE=$HOME/.cache/nightshift/gomod go run . | gzip -9n > ../../tests/unit/data/cron_robfig.json.gz
//
// The zones' UTC offsets come from the machine's tz database (/usr/share/zoneinfo), the same
// one Python's zoneinfo reads; the table records each zone's transitions in the years it
// covers so the test can tell when the Python side's tz database disagrees.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

const robfigVersion = "v3.0.1"

// Schedules whose Next chains are tabulated (every one must parse).
var schedules = []string{
	"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly",
	"@every 1h30m", "@every 90s", "@every 25h", "@every 0", "@every -5m", "@every 1.5h",
	"* * * * *", "*/5 * * * *", "30 2 * * *", "30 1 * * *", "0 0 * * *", "0 3 * * 0",
	"15 */4 * * 1-5", "0 0 31 * *", "0 0 29 2 *", "0 0 1,15 * MON", "0 12 * JAN-MAR MON-FRI",
	"0 2 * * *", "0 1 * * *", "0 * * * *", "30 * * * *", "45 23 * * *", "0 0 * * 1",
	"*/15 2 * * *", "0 2-3 * * *", "0,30 1-3 * * *", "59 1 * * *", "5 4 * * sun",
	"0 9 * * 1-5", "0 9-17/2 * * mon-fri", "0 0 1 */3 *", "0 0 15 * 5", "0 0 */2 * 1",
	"0 0 * * */2", "0 0 1-7 * 1", "0 0 13 * FRI", "0 0 ? * MON", "0 0 1 ? *",
	"30 6-16/4 * * 1-5", "0 0 31 2 *", "0 0 30 4,6,9,11 *", "0 0 29 2 1", "*/7 */5 */3 * *",
	"10-50/20 * * * *", "0 */1 * * *", "0 12 1/10 * *", "0 0 * * 6,0", "0 5/3 * * *",
	"0 0 *-5 * *", "2 0 * * *", "0 0,12 * * *", "0 23 * * *", "30 0 * * *", "0 0 * * SAT",
	"30 3 * * *",
}

// Strings given to ParseStandard, accepted or not: the tricky corners of the grammar.
var parseCases = []string{
	"0 0 * * 7", "60 * * * *", "* * * *", "@reboot", "TZ=UTC * * * * *",
	"CRON_TZ=Europe/Berlin 0 9 * * *", "TZ=0", "TZ=Nowhere/City * * * * *", "TZ= * * * * *",
	"", "   ", "0 0 0 * * *", "0 24 * * *", "0 0 0 * *", "0 0 32 * *", "0 0 * 13 *",
	"0 0 * 0 *", "*/0 * * * *", "5-1 * * * *", "1-2-3 * * * *", "1/2/3 * * * *", "a * * * *",
	"-1 * * * *", "0 0 * * MONDAY", "0 0 * JANUARY *", "@every", "@every ", "@every 5",
	"@every 5x", "@every  5m", "@daily ", " @daily", "@DAILY", "@every 1µs", "@every .5s",
	"@every 5.m", "@every .s", "@every 1h-5m", "@every +1h", "@every 9999999999h",
	"1,,2 * * * *", ", * * * *", "? ? ? ? ?", "+5 * * * *", "05 * * * *", "0x5 * * * *",
	"5_0 * * * *", "* * * * 0-7", "0 0 * * sun-sat", "0 0 * * sat-sun", "1-60/5 * * * *",
	"99999999999999999999 * * * *", "9223372036854775807 * * * *", "*/99999999999 * * * *",
	"0 0 * * Mon", "0 0 * jan-Dec *", "0\t0 * * *", "  */5   *  * * *  ", "0 0 * * ?/2",
	"*/5/2 * * * *", "1-5/0 * * * *", "0 0 1-31/31 * *", "*/-1 * * * *", "@every 1h TZ",
	"@hourlyTZ", "0 0 * * 1 TZ", "0 0 L * *", "0 0 * * 1#2", "0 0 * * 5L",
}

var zones = []string{
	"UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Sao_Paulo",
	"Asia/Kolkata", "Pacific/Chatham", "America/St_Johns", "Europe/London", "Asia/Tehran",
	"America/Santiago", "Australia/Sydney",
}

// Schedules also tabulated from the dense starts around DST transitions: the ones whose times
// fall in or near the hours clocks change (the others only see the sparse sweep).
var denseSchedules = map[string]bool{
	"@daily": true, "@hourly": true, "@weekly": true, "@monthly": true, "* * * * *": true,
	"*/5 * * * *": true, "30 2 * * *": true, "30 1 * * *": true, "0 0 * * *": true,
	"0 3 * * 0": true, "15 */4 * * 1-5": true, "0 2 * * *": true, "0 1 * * *": true,
	"0 * * * *": true, "30 * * * *": true, "*/15 2 * * *": true, "0 2-3 * * *": true,
	"0,30 1-3 * * *": true, "59 1 * * *": true, "30 0 * * *": true, "2 0 * * *": true,
	"30 3 * * *": true, "45 23 * * *": true, "0 0 * * 1": true, "@every 1h30m": true,
}

// Years tabulated; Go's and Python's tz data must agree on them (the test checks).
const firstYear, lastYear = 2026, 2028

// Historic windows: America/Sao_Paulo moved clocks at midnight until 2019, which is where
// robfig's "the day does not start at 00:00" correction matters.
var historic = map[string][2]int{"America/Sao_Paulo": {2017, 2018}}

const chainLength = 3

type parsed struct {
	Spec   string     `json:"spec"`
	Error  *string    `json:"error"`              // robfig's error, or null
	Bits   *[6]uint64 `json:"bits,omitempty"`     // second, minute, hour, dom, month, dow
	Delay  *int64     `json:"delay_ns,omitempty"` // ConstantDelaySchedule
	Zone   *string    `json:"zone,omitempty"`     // SpecSchedule.Location from a TZ= prefix
	K8sErr *string    `json:"kubernetes_error"`   // what the API server's validation says, or null
}

type transition struct {
	At     int64 `json:"at"`     // Unix seconds of the change
	Before int   `json:"before"` // UTC offset (s) before
	After  int   `json:"after"`  // UTC offset (s) from then on
}

type table struct {
	Comment     string                  `json:"comment"`
	Robfig      string                  `json:"robfig_version"`
	Go          string                  `json:"go_version"`
	Years       [2]int                  `json:"years"`
	Historic    map[string][2]int       `json:"historic"`
	Zones       []string                `json:"zones"`
	Transitions map[string][]transition `json:"transitions"`
	Parse       []parsed                `json:"parse"`
	Schedules   []string                `json:"schedules"`
	// Rows: [schedule index, zone index, start (Unix ns), next1, next2, next3 (Unix s, or null)]
	Rows [][]any `json:"rows"`
	// MostRecent: [schedule index, zone index, creation, lastScheduleTime or null,
	// startingDeadlineSeconds or null, now, earliest, mostRecent or null, missed, error or null]
	MostRecent [][]any `json:"most_recent"`
}

// mostRecentScheduleTime is copied from k8s.io/kubernetes v1.36.3
// pkg/controller/cronjob/utils.go (Copyright 2016 The Kubernetes Authors, Apache License 2.0),
// with the CronJob's fields as parameters instead of the object; the body is unchanged.
func mostRecentScheduleTime(creation time.Time, lastScheduleTime *time.Time, startingDeadlineSeconds *int64, now time.Time, schedule cron.Schedule, includeStartingDeadlineSeconds bool) (time.Time, *time.Time, string, error) {
	earliestTime := creation
	missedSchedules := "none"
	if lastScheduleTime != nil {
		earliestTime = *lastScheduleTime
	}
	if includeStartingDeadlineSeconds && startingDeadlineSeconds != nil {
		// controller is not going to schedule anything below this point
		schedulingDeadline := now.Add(-time.Second * time.Duration(*startingDeadlineSeconds))

		if schedulingDeadline.After(earliestTime) {
			earliestTime = schedulingDeadline
		}
	}

	t1 := schedule.Next(earliestTime)
	t2 := schedule.Next(t1)

	if now.Before(t1) {
		return earliestTime, nil, missedSchedules, nil
	}
	if now.Before(t2) {
		return earliestTime, &t1, missedSchedules, nil
	}

	timeBetweenTwoSchedules := int64(t2.Sub(t1).Round(time.Second).Seconds())
	if timeBetweenTwoSchedules < 1 {
		return earliestTime, nil, missedSchedules, fmt.Errorf("time difference between two schedules is less than 1 second")
	}
	timeElapsed := int64(now.Sub(t1).Seconds())
	numberOfMissedSchedules := (timeElapsed / timeBetweenTwoSchedules) + 1

	var mostRecentTime time.Time
	potentialEarliest := t1.Add(time.Duration((numberOfMissedSchedules-1-1)*timeBetweenTwoSchedules) * time.Second)
	for t := schedule.Next(potentialEarliest); !t.After(now); t = schedule.Next(t) {
		mostRecentTime = t
	}

	switch {
	case numberOfMissedSchedules > 100:
		missedSchedules = "many"
	case numberOfMissedSchedules > 0:
		missedSchedules = "few"
	}

	if mostRecentTime.IsZero() {
		return earliestTime, nil, missedSchedules, nil
	}
	return earliestTime, &mostRecentTime, missedSchedules, nil
}

// Schedules and spans for the mostRecentScheduleTime cases.
var mostRecentSchedules = []string{
	"@hourly", "@daily", "30 2 * * *", "30 1 * * *", "0 9 * * 1-5", "*/5 * * * *", "0 0 31 2 *",
	"@every 1h30m", "30 6-16/4 * * 1-5", "@monthly", "0 2 * * *", "0 0 * * *",
}
var mostRecentZones = []string{"UTC", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Europe/Berlin"}
var mostRecentSpans = []time.Duration{
	30 * time.Second, 50 * time.Minute, 3 * time.Hour, 26 * time.Hour, 80 * time.Hour,
	9 * 24 * time.Hour, 40 * 24 * time.Hour, 230 * 24 * time.Hour,
}

func mostRecentCases(tab *table) {
	index := map[string]int{}
	for i, s := range schedules {
		index[s] = i
	}
	zoneIndex := map[string]int{}
	for i, z := range zones {
		zoneIndex[z] = i
	}
	sds := int64(200)
	for _, name := range mostRecentSchedules {
		si, ok := index[name]
		if !ok {
			panic("mostRecentSchedules: not in schedules: " + name)
		}
		for _, zn := range mostRecentZones {
			loc, _ := time.LoadLocation(zn)
			s, _ := cron.ParseStandard(name)
			if spec, ok := s.(*cron.SpecSchedule); ok {
				spec.Location = loc
			}
			var creations []time.Time
			for _, tr := range tab.Transitions[zn] {
				creations = append(creations, time.Unix(tr.At, 0).Add(-97*time.Minute-13*time.Second))
			}
			creations = append(creations, time.Date(2026, 5, 17, 10, 11, 12, 0, time.UTC))
			for _, creation := range creations {
				for _, span := range mostRecentSpans {
					now := creation.Add(span)
					for variant := 0; variant < 3; variant++ {
						var last *time.Time
						var deadline *int64
						row := []any{si, zoneIndex[zn], creation.Unix(), nil, nil, now.Unix()}
						switch variant {
						case 1: // a last schedule time: the first scheduled time after creation
							l := s.Next(creation)
							if l.IsZero() || l.After(now) {
								continue
							}
							last = &l
							row[3] = l.Unix()
						case 2:
							deadline = &sds
							row[4] = sds
						}
						earliest, recent, missed, err := mostRecentScheduleTime(creation, last, deadline, now, s, true)
						row = append(row, earliest.Unix())
						if recent == nil {
							row = append(row, nil)
						} else {
							row = append(row, recent.Unix())
						}
						row = append(row, missed)
						if err != nil {
							row = append(row, err.Error())
						} else {
							row = append(row, nil)
						}
						tab.MostRecent = append(tab.MostRecent, row)
					}
				}
			}
		}
	}
}

func parseOne(spec string) (p parsed) {
	p.Spec = spec
	defer func() {
		if r := recover(); r != nil { // as k8s.io/kubernetes/pkg/util/parsers does
			msg := fmt.Sprintf("invalid schedule format: %v", r)
			p.Error, p.K8sErr = &msg, &msg
			p.Bits, p.Delay, p.Zone = nil, nil, nil
		}
	}()
	s, err := cron.ParseStandard(spec)
	if err != nil {
		msg := err.Error()
		p.Error, p.K8sErr = &msg, &msg
		return p
	}
	switch s := s.(type) {
	case *cron.SpecSchedule:
		p.Bits = &[6]uint64{s.Second, s.Minute, s.Hour, s.Dom, s.Month, s.Dow}
		if s.Location != time.Local {
			z := s.Location.String()
			p.Zone = &z
		}
	case cron.ConstantDelaySchedule:
		d := int64(s.Delay)
		p.Delay = &d
	}
	// pkg/apis/batch/validation validateScheduleFormat, for a new CronJob (TZ not allowed)
	if strings.Contains(spec, "TZ") {
		msg := "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
		p.K8sErr = &msg
	}
	return p
}

func transitions(loc *time.Location, from, to time.Time) []transition {
	var out []transition
	t := from.In(loc)
	for t.Before(to) {
		_, end := t.ZoneBounds()
		if end.IsZero() || !end.Before(to) {
			break
		}
		_, before := end.Add(-time.Second).Zone()
		_, after := end.Zone()
		out = append(out, transition{end.Unix(), before, after})
		t = end
	}
	return out
}

func starts(loc *time.Location, from, to time.Time, trs []transition) (sparse, dense []time.Time) {
	// sparse sweep: every 61 days 7 hours 13 minutes, so the weekday and hour drift
	for t := from; t.Before(to); t = t.Add(61*24*time.Hour + 7*time.Hour + 13*time.Minute) {
		sparse = append(sparse, t)
	}
	// dense: every 15 minutes within 3 hours of each transition, odd steps 29.5 s late
	for _, tr := range trs {
		at := time.Unix(tr.At, 0)
		for i := -12; i <= 12; i++ {
			t := at.Add(time.Duration(i) * 15 * time.Minute)
			if i%2 != 0 {
				t = t.Add(29*time.Second + 500*time.Millisecond)
			}
			dense = append(dense, t)
		}
		// and around the wall-clock midnight that follows it
		local := at.In(loc)
		mid := time.Date(local.Year(), local.Month(), local.Day()+1, 0, 0, 0, 0, loc)
		for i := -2; i <= 2; i++ {
			dense = append(dense, mid.Add(time.Duration(i)*20*time.Minute))
		}
	}
	return sparse, dense
}

func main() {
	tab := table{
		Comment:     "generated by hack/cron-table (go run .); do not edit",
		Robfig:      robfigVersion,
		Go:          runtime.Version(),
		Years:       [2]int{firstYear, lastYear},
		Historic:    historic,
		Zones:       zones,
		Transitions: map[string][]transition{},
		Schedules:   schedules,
	}
	for _, spec := range parseCases {
		tab.Parse = append(tab.Parse, parseOne(spec))
	}
	parsedSchedules := make([]cron.Schedule, len(schedules))
	for i, spec := range schedules {
		tab.Parse = append(tab.Parse, parseOne(spec))
		s, err := cron.ParseStandard(spec)
		if err != nil {
			fmt.Fprintf(os.Stderr, "schedule %q: %v\n", spec, err)
			os.Exit(1)
		}
		parsedSchedules[i] = s
	}
	for zi, name := range zones {
		loc, err := time.LoadLocation(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "zone %s: %v\n", name, err)
			os.Exit(1)
		}
		spans := [][2]int{{firstYear, lastYear}}
		if h, ok := historic[name]; ok {
			spans = append(spans, h)
		}
		var trs []transition
		var sparse, dense []time.Time
		for _, span := range spans {
			from := time.Date(span[0], 1, 1, 0, 0, 0, 0, time.UTC)
			to := time.Date(span[1]+1, 1, 1, 0, 0, 0, 0, time.UTC)
			ts := transitions(loc, from, to)
			trs = append(trs, ts...)
			// stop the sweep a week before the end so chains stay inside the covered years
			sp, de := starts(loc, from, to.Add(-7*24*time.Hour), ts)
			sparse, dense = append(sparse, sp...), append(dense, de...)
		}
		tab.Transitions[name] = trs
		for si, s := range parsedSchedules {
			if spec, ok := s.(*cron.SpecSchedule); ok {
				spec.Location = loc // as the controller's "TZ=<spec.timeZone> <schedule>"
			}
			all := sparse
			if denseSchedules[schedules[si]] {
				all = append(append([]time.Time{}, sparse...), dense...)
			}
			for _, start := range all {
				row := []any{si, zi, start.UnixNano()}
				t := start
				for n := 0; n < chainLength; n++ {
					t = s.Next(t)
					if t.IsZero() {
						row = append(row, nil)
						break
					}
					row = append(row, t.Unix())
				}
				tab.Rows = append(tab.Rows, row)
			}
		}
	}
	mostRecentCases(&tab)
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(tab); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
