"""Writes the synthetic HR dumps of dags/hr_migration.yaml (deterministic: seeded).

Three header-less CSVs, as a legacy HR system exports them:
  departments.csv       id,department
  jobs.csv              id,job
  hired_employees.csv   id,name,hired_at (ISO 8601, UTC),department_id,job_id
About 4% of the employees have an empty field (a name, a date, a department or a job), as
real dumps do; weir's load rejects those rows with a reason instead of losing them.
Run: python3 data/hr/make_hr_data.py
"""
import csv
import datetime
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(20211107)

departments = ["Accounting", "Business Development", "Engineering", "Human Resources",
               "Legal", "Marketing", "Product Management", "Research and Development",
               "Sales", "Services", "Support", "Training"]
jobs = ["Account Executive", "Analyst", "Data Engineer", "Designer", "Developer",
        "Marketing Assistant", "Office Manager", "Product Owner", "Project Manager",
        "Recruiter", "Sales Representative", "Software Engineer", "Support Specialist",
        "Technical Writer", "Tester", "Trainer"]
first = ["Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances", "Grace", "Hedy",
         "Ivan", "Joan", "Ken", "Leslie", "Margaret", "Niklaus", "Ole", "Radia", "Shafi",
         "Tim", "Whitfield"]
last = ["Allen", "Backus", "Cerf", "Dijkstra", "Engelbart", "Floyd", "Goldberg", "Hamilton",
        "Hoare", "Kay", "Knuth", "Lamport", "Liskov", "McCarthy", "Perlman", "Ritchie",
        "Sammet", "Thompson", "Wirth", "O'Neil"]


def write(name, rows):
    with open(os.path.join(HERE, name), "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


write("departments.csv", [(i + 1, d) for i, d in enumerate(departments)])
write("jobs.csv", [(i + 1, j) for i, j in enumerate(jobs)])
start = datetime.datetime(2020, 10, 1, tzinfo=datetime.timezone.utc)
hires = []
for i in range(1, 1001):
    hired = start + datetime.timedelta(minutes=rng.randrange(0, 60 * 24 * 456))
    row = [i, f"{rng.choice(first)} {rng.choice(last)}",
           hired.strftime("%Y-%m-%dT%H:%M:%SZ"),
           rng.randrange(1, len(departments) + 1), rng.randrange(1, len(jobs) + 1)]
    if rng.random() < 0.04:
        row[rng.choice([1, 2, 3, 4])] = ""
    hires.append(row)
write("hired_employees.csv", hires)
