// The Node GraphQL peer of `cargo xtask bench`: Apollo Server 4 answering the
// contract's Dashboard operation from the same stub backends as portico, the
// way a Node BFF would be written: one @apollo/datasource-rest data source per
// service and request (which deduplicates identical GETs within a request),
// the students' sessions and payments resolved concurrently, and the lessons
// of all sessions batched by a per-request DataLoader into one `?ids=` call.
// It also answers the large answer, `readingSessions(studentId:, first:)` with
// each session's lesson and student: one `sessions/` page, the lessons and
// the student each batched by a DataLoader into one call; and the fan-out,
// `students(first: 500)` with each student's sessions and their lessons: one
// `users/` page, one `sessions/` call per student and the lessons batched.
// Both make the calls portico makes.
//
// usage: node server.js <student_api base URL> <live_reading base URL> <payment base URL> <port>

import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { RESTDataSource } from '@apollo/datasource-rest';
import DataLoader from 'dataloader';

const [studentApi, liveReading, payment, port] = process.argv.slice(2);

const typeDefs = `#graphql
  type Query {
    student(id: ID!): Student
    students(ids: [ID!], search: String, first: Int = 50): [Student!]
    readingSessions(studentId: ID!, first: Int = 50): [ReadingSession!]
  }
  type Student {
    id: ID!
    username: String!
    email: String!
    fullName: String!
    grade: Int
    readingSessions(first: Int = 50): [ReadingSession!]
    payments(first: Int = 50): [Payment!]
  }
  type ReadingSession {
    id: ID!
    startedAt: String
    wordsPerMinute: Float
    accuracy: Float
    lesson: Lesson
    student: Student
  }
  type Lesson {
    id: ID!
    title: String!
    level: String!
  }
  type Payment {
    id: ID!
    amount: String!
    currency: String!
    status: String!
  }
`;

class Service extends RESTDataSource {
  constructor(baseURL, options) {
    super(options);
    this.baseURL = baseURL.endsWith('/') ? baseURL : `${baseURL}/`;
  }
}

const resolvers = {
  Query: {
    student: (_, { id }, { services }) => services.students.get(`users/${encodeURIComponent(id)}/`),
    students: async (_, { ids, search, first }, { services }) => {
      const params = { page_size: String(first) };
      if (ids) params.ids = ids.join(',');
      if (search != null) params.search = search;
      const page = await services.students.get('users/', { params });
      return page.results;
    },
    readingSessions: async (_, { studentId, first }, { services }) => {
      const page = await services.live.get('sessions/', {
        params: { student_id: String(studentId), page_size: String(first) },
      });
      return page.results;
    },
  },
  Student: {
    fullName: (student) => student.full_name,
    readingSessions: async (student, { first }, { services }) => {
      const page = await services.live.get('sessions/', {
        params: { student_id: String(student.id), page_size: String(first) },
      });
      return page.results;
    },
    payments: async (student, { first }, { services }) => {
      const page = await services.payments.get('payments/', {
        params: { student_id: String(student.id), page_size: String(first) },
      });
      return page.results;
    },
  },
  ReadingSession: {
    startedAt: (session) => session.started_at,
    wordsPerMinute: (session) => session.words_per_minute,
    lesson: (session, _, { lessons }) => lessons.load(String(session.lesson_id)),
    student: (session, _, { students }) => students.load(String(session.student_id)),
  },
};

function context() {
  const services = {
    students: new Service(studentApi),
    live: new Service(liveReading),
    payments: new Service(payment),
  };
  const lessons = new DataLoader(async (ids) => {
    const sorted = [...ids].sort((a, b) => Number(a) - Number(b));
    const page = await services.live.get('lesson/', {
      params: { ids: sorted.join(','), page_size: String(sorted.length) },
    });
    const byId = new Map(page.results.map((lesson) => [String(lesson.id), lesson]));
    return ids.map((id) => byId.get(id) ?? null);
  });
  const students = new DataLoader(async (ids) => {
    const sorted = [...ids].sort((a, b) => Number(a) - Number(b));
    const page = await services.students.get('users/', {
      params: { ids: sorted.join(','), page_size: String(sorted.length) },
    });
    const byId = new Map(page.results.map((student) => [String(student.id), student]));
    return ids.map((id) => byId.get(id) ?? null);
  });
  return Promise.resolve({ services, lessons, students });
}

const server = new ApolloServer({ typeDefs, resolvers });
const { url } = await startStandaloneServer(server, {
  listen: { host: '127.0.0.1', port: Number(port) },
  context,
});
console.log(`node peer listening on ${url}`);
