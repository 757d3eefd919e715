"""Frozen teachers behind one interface (`Teacher`): cross-encoder, dense bi-encoder and precomputed run files."""
from distill_ret.teachers.base import Ranking, Teacher, TeacherQuery, candidates_from_run, rank_order, rerank_run
from distill_ret.teachers.run_file import RunFileTeacher

__all__ = ["Ranking", "RunFileTeacher", "Teacher", "TeacherQuery", "candidates_from_run", "rank_order", "rerank_run"]
