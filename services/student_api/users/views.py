from django.shortcuts import get_object_or_404
from rest_framework import filters, generics
from rest_framework.response import Response
from rest_framework.views import APIView

from portico_common.identity import require_user_id
from portico_common.query import IdsFilterMixin

from .models import User
from .serializers import UserSerializer


class UserList(IdsFilterMixin, generics.ListAPIView):
    queryset = User.objects.all()
    serializer_class = UserSerializer
    filter_backends = [filters.SearchFilter]
    search_fields = ["username", "full_name", "email"]


class UserDetail(generics.RetrieveAPIView):
    queryset = User.objects.all()
    serializer_class = UserSerializer


class Register(generics.CreateAPIView):
    serializer_class = UserSerializer


class Profile(APIView):
    def get(self, request):
        user = get_object_or_404(User, pk=require_user_id(request))
        return Response(UserSerializer(user).data)
